"""What the voice says: text is read the way a person reads it aloud, not symbol by symbol."""
from __future__ import annotations

import pytest

from runtime.tts.normalize import has_words, normalize_text

pytestmark = pytest.mark.unit

SPOKEN_FORMS = [
    ("It costs $3.50.", "It costs three dollars and fifty cents."),
    ("Only $5 today.", "Only five dollars today."),
    ("Tickets are €20 each.", "Tickets are twenty euros each."),
    ("A pint is £1.99.", "A pint is one pound and ninety-nine pence."),
    ("They raised $1.5 million.", "They raised one point five million dollars."),
    ("We meet on 12/05/2026.", "We meet on December fifth, twenty twenty-six."),
    ("The release is 2026-03-14.", "The release is March fourteenth, twenty twenty-six."),
    ("Call 555-0199 now.", "Call five five five, zero one nine nine now."),
    ("Dial (555) 123-4567 please.", "Dial five five five, one two three, four five six seven please."),
    ("Ring +1 555-123-4567.", "Ring plus one, five five five, one two three, four five six seven."),
    ("See you at 3:30 pm.", "See you at three thirty p m."),
    ("The train leaves at 10:05.", "The train leaves at ten oh five."),
    ("Lunch is at 12:00.", "Lunch is at twelve o'clock."),
    ("Doors open at 7 pm.", "Doors open at seven p m."),
    ("She finished 1st and he was 22nd.", "She finished first and he was twenty-second."),
    ("It is the 3rd time.", "It is the third time."),
    ("Fruit, e.g. apples.", "Fruit, for example apples."),
    ("Cats vs. dogs.", "Cats versus dogs."),
    ("Dr. Smith is in.", "Doctor Smith is in."),
    ("Mr. and Mrs. Jones.", "Mister and Missus Jones."),
    ("Red, blue, etc.", "Red, blue, et cetera."),
    ("That is, i.e. never.", "That is, that is never."),
    ("Visit https://www.example.com/docs today.", "Visit w w w dot example dot com slash docs today."),
    ("Mail jane.doe@example.org please.", "Mail jane dot doe at example dot org please."),
    ("The run was 5 km long.", "The run was five kilometers long."),
    ("It weighs 1 kg.", "It weighs one kilogram."),
    ("Set it to 25°C.", "Set it to twenty-five degrees Celsius."),
    ("Battery at 50%.", "Battery at fifty percent."),
    ("Drive at 60 mph.", "Drive at sixty miles per hour."),
    ("There were 1,234 people.", "There were one thousand two hundred and thirty-four people."),
    ("Pi is about 3.14.", "Pi is about three point one four."),
    ("It fell to -5 overnight.", "It fell to minus five overnight."),
    ("Born in 1999.", "Born in nineteen ninety-nine."),
    ("We have 42 chairs.", "We have forty-two chairs."),
    ("Hello 🙂 there 👍🏽!", "Hello there!"),
    ("I ❤️ Paris 🇫🇷.", "I Paris."),
    ("Rock & roll.", "Rock and roll."),
]


@pytest.mark.parametrize("written, spoken", SPOKEN_FORMS)
def test_text_is_read_as_people_read_it(written, spoken):
    assert normalize_text(written, "en") == spoken


def test_the_table_covers_every_kind_of_written_form():
    assert len(SPOKEN_FORMS) >= 30


def test_emoji_only_text_has_nothing_to_say():
    assert not has_words(normalize_text("🙂👍🏽🎉", "en"))
    assert has_words(normalize_text("ok 🙂", "en"))


def test_other_languages_get_their_own_number_words():
    assert normalize_text("Ich habe 42 Katzen 🐱.", "de") == "Ich habe zweiundvierzig Katzen."


def test_a_number_too_long_to_name_is_read_digit_by_digit():
    huge = "7" * 310  # num2words names numbers below 10**300 only
    spoken = normalize_text(f"The code is {huge} and it is -{huge}.", "en")
    assert spoken.count("seven") == 620
    assert "minus seven seven" in spoken
    assert not any(character.isdigit() for character in spoken)
