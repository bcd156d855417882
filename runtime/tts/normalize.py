"""Text -> the words a person would say when reading it aloud, before any TTS engine sees it.

What comes from maintained libraries: number words (cardinals, ordinals, years, decimals, in each
language num2words knows) from `num2words`; the emoji catalogue from `emoji`. Our own rules, because
no maintained library covers them for TTS: spotting currency amounts, dates, times, phone
numbers, units, URLs, e-mail addresses and abbreviations in running text, and how each is read.
Those reading rules are English; other languages get emoji removal and their own number words.
"""
from __future__ import annotations

import re
from typing import Callable

import emoji
from num2words import CONVERTER_CLASSES, num2words

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
# name (singular, plural) of a currency symbol and of its hundredth
_CURRENCIES = {
    "$": (("dollar", "dollars"), ("cent", "cents")),
    "€": (("euro", "euros"), ("cent", "cents")),
    "£": (("pound", "pounds"), ("penny", "pence")),
    "¥": (("yen", "yen"), None),
    "₹": (("rupee", "rupees"), ("paisa", "paise")),
}
_CURRENCY_CODES = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹"}
# unit symbol -> (singular, plural); only after a number
_UNITS = {
    "km": ("kilometer", "kilometers"), "m": ("meter", "meters"), "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"), "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"), "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"),
    "oz": ("ounce", "ounces"), "ft": ("foot", "feet"), "in": ("inch", "inches"), "mi": ("mile", "miles"),
    "mph": ("mile per hour", "miles per hour"), "km/h": ("kilometer per hour", "kilometers per hour"),
    "l": ("liter", "liters"), "ml": ("milliliter", "milliliters"), "s": ("second", "seconds"),
    "ms": ("millisecond", "milliseconds"), "min": ("minute", "minutes"), "h": ("hour", "hours"),
    "hrs": ("hour", "hours"), "kb": ("kilobyte", "kilobytes"), "mb": ("megabyte", "megabytes"),
    "gb": ("gigabyte", "gigabytes"), "tb": ("terabyte", "terabytes"), "hz": ("hertz", "hertz"),
    "khz": ("kilohertz", "kilohertz"), "ghz": ("gigahertz", "gigahertz"), "kw": ("kilowatt", "kilowatts"),
    "w": ("watt", "watts"), "v": ("volt", "volts"), "°c": ("degree Celsius", "degrees Celsius"),
    "°f": ("degree Fahrenheit", "degrees Fahrenheit"), "%": ("percent", "percent"),
}
# abbreviation (as written, case-sensitive) -> spoken form
_ABBREVIATIONS = {
    "e.g.": "for example", "i.e.": "that is", "etc.": "et cetera", "vs.": "versus", "vs": "versus",
    "approx.": "approximately", "Dr.": "Doctor", "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz",
    "Prof.": "Professor", "Jr.": "Junior", "Sr.": "Senior", "St.": "Saint", "Mt.": "Mount",
    "Inc.": "Incorporated", "Ltd.": "Limited", "Co.": "Company", "Corp.": "Corporation",
    "Dept.": "Department", "Jan.": "January", "Feb.": "February", "Aug.": "August", "Sept.": "September",
    "Oct.": "October", "Nov.": "November", "Dec.": "December", "No.": "number", "a.m.": "a m", "p.m.": "p m",
    "&": "and", "w/": "with", "ca.": "circa", "min.": "minutes", "max.": "maximum", "FAQ": "F A Q",
}

_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)]", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_PHONE = re.compile(r"(?<![\w/.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)\s?|\d{3}[ .-])?\d{3}[.-]\d{4}(?![\w/-])")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_SLASH_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b")
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})(?:\s*([AaPp])\.?\s?[Mm]\.?(?=\W|$))?")
_AM_PM = re.compile(r"\b(\d{1,2})\s*([AaPp])\.?\s?[Mm]\.?(?=\W|$)")
_CURRENCY = re.compile(
    r"(?P<sym>[$€£¥₹])\s?(?P<amount>\d[\d,]*(?:\.\d+)?)(?:\s?(?P<scale>thousand|million|billion|trillion|[kKmMbB]n?)\b)?"
    r"|(?P<code>USD|EUR|GBP|JPY|INR)\s?(?P<amount2>\d[\d,]*(?:\.\d+)?)"
)
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_UNIT = re.compile(
    r"(?P<number>-?\d[\d,]*(?:\.\d+)?)\s?(?P<unit>" + "|".join(
        re.escape(unit) for unit in sorted(_UNITS, key=len, reverse=True)
    ) + r")(?![\w])",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.])(?P<sign>[-−])?(?P<number>\d[\d,]*(?:\.\d+)?)(?![\w])")
_YEAR_CONTEXT = re.compile(r"\b(?:in|since|from|until|till|by|of|year|during|before|after|around|circa)\s*$", re.IGNORECASE)
_ABBREVIATION = re.compile(
    "|".join(
        (r"(?<![\w.])" if key[0].isalnum() else "") + re.escape(key) + (r"(?![\w])" if key[-1].isalnum() else "")
        for key in sorted(_ABBREVIATIONS, key=len, reverse=True)
    )
)
_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def drop_emoji(text: str) -> str:
    """The text without emoji (skin tones, flags and ZWJ sequences included)."""
    return emoji.replace_emoji(text, replace="")


def has_words(text: str) -> bool:
    """True when the text holds anything a voice can say (a letter or a digit)."""
    return any(character.isalnum() for character in text)


def _cardinal(number: str | float | int, lang: str = "en") -> str:
    plain = str(number).replace(",", "")
    value = float(plain) if "." in plain else int(plain)
    try:
        return num2words(value, lang=lang).replace(",", "")
    except OverflowError:  # past num2words' largest name (10**300 and up): read it digit by digit
        return ("minus " if plain.startswith("-") else "") + _digits(plain)


def _digits(digits: str) -> str:
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits if d.isdigit())


def _year(year: int) -> str:
    return num2words(year, to="year").replace(",", "")


def _ordinal(number: int) -> str:
    try:
        return num2words(number, to="ordinal").replace(",", "")
    except OverflowError:
        return _digits(str(number))


def _say_url(match: re.Match) -> str:
    url = re.sub(r"^https?://", "", match.group(0), flags=re.IGNORECASE)
    url = re.sub(r"^www\.", "w w w dot ", url, flags=re.IGNORECASE).rstrip("/")
    spoken = url.replace(".", " dot ").replace("/", " slash ").replace("-", " dash ").replace("_", " underscore ")
    spoken = spoken.replace("?", " question mark ").replace("=", " equals ").replace("&", " and ")
    return " ".join(spoken.split())


def _say_email(match: re.Match) -> str:
    user, domain = match.group(0).split("@", 1)
    spoken = f"{user} at {domain}".replace(".", " dot ").replace("_", " underscore ").replace("-", " dash ").replace("+", " plus ")
    return " ".join(spoken.split())


def _say_phone(match: re.Match) -> str:
    groups = re.findall(r"\+?\d+", match.group(0))
    words = []
    for group in groups:
        words.append(("plus " if group.startswith("+") else "") + _digits(group))
    return ", ".join(words)


def _say_date(year: int, month: int, day: int) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return f"{_MONTHS[month - 1]} {_ordinal(day)}, {_year(year)}"


def _say_iso_date(match: re.Match) -> str:
    spoken = _say_date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    return spoken or match.group(0).replace("-", " ")


def _say_slash_date(match: re.Match) -> str:
    first, second, year = int(match.group(1)), int(match.group(2)), int(match.group(3))
    year = year + 2000 if len(match.group(3)) == 2 else year
    # Month first, as in the United States, unless the first number cannot be a month.
    month, day = (first, second) if first <= 12 else (second, first)
    return _say_date(year, month, day) or f"{first} {second} {year}"


def _say_time(match: re.Match) -> str:
    hours, minutes, meridiem = int(match.group(1)), int(match.group(2)), match.group(3)
    if hours > 23 or minutes > 59:
        return match.group(0)
    hour_words = _cardinal(hours)
    if minutes == 0:
        spoken = hour_words if meridiem else (f"{hour_words} o'clock" if hours <= 12 else f"{hour_words} hundred")
    elif minutes < 10:
        spoken = f"{hour_words} oh {_cardinal(minutes)}"
    else:
        spoken = f"{hour_words} {_cardinal(minutes)}"
    if not meridiem:
        return spoken
    return f"{spoken} {meridiem.lower()} m" + _kept_full_stop(match)


def _kept_full_stop(match: re.Match) -> str:
    """'p.m.' at a sentence's end: its last dot also ends the sentence."""
    return "." if match.group(0).endswith(".") else ""


def _say_am_pm(match: re.Match) -> str:
    return f"{_cardinal(int(match.group(1)))} {match.group(2).lower()} m" + _kept_full_stop(match)


_SCALES = {"k": "thousand", "m": "million", "mn": "million", "b": "billion", "bn": "billion"}


def _say_currency(match: re.Match) -> str:
    symbol = match.group("sym") or _CURRENCY_CODES[match.group("code")]
    amount = (match.group("amount") or match.group("amount2")).replace(",", "")
    scale = match.group("scale")
    (unit, units), minor = _CURRENCIES[symbol]
    if scale:  # "$1.5 million": the scale word, then the plural unit
        scale_word = _SCALES.get(scale.lower(), scale.lower())
        return f"{_cardinal(amount)} {scale_word} {units}"
    whole, _, fraction = amount.partition(".")
    whole_value = int(whole)
    cents = int(round(float("0." + fraction) * 100)) if fraction else 0
    parts = []
    if whole_value or not cents:
        parts.append(f"{_cardinal(whole_value)} {unit if whole_value == 1 else units}")
    if cents and minor:
        parts.append(f"{_cardinal(cents)} {minor[0] if cents == 1 else minor[1]}")
    return " and ".join(parts)


def _say_ordinal(match: re.Match) -> str:
    return _ordinal(int(match.group(1)))


def _say_unit(match: re.Match) -> str:
    number, unit = match.group("number"), match.group("unit").lower()
    singular, plural = _UNITS[unit]
    value = float(number.replace(",", ""))
    sign = "minus " if number.startswith("-") else ""
    return f"{sign}{_cardinal(number.lstrip('-'))} {singular if abs(value) == 1 else plural}"


def _say_number(match: re.Match, text: str) -> str:
    number = match.group("number")
    sign = "minus " if match.group("sign") else ""
    plain = number.replace(",", "")
    # A bare four-digit number after "in", "since"... is a year: "in 1999" -> "nineteen ninety-nine".
    if not sign and "," not in number and re.fullmatch(r"1[1-9]\d\d|20\d\d", plain) and _YEAR_CONTEXT.search(text[: match.start()]):
        return _year(int(plain))
    return sign + _cardinal(plain)


_TITLES = {"Dr.", "Mr.", "Mrs.", "Ms.", "Prof.", "St.", "Mt.", "No."}  # never end a sentence


def _say_abbreviation(match: re.Match) -> str:
    written = match.group(0)
    rest = match.string[match.end():]
    # "etc." at the end of a sentence: its dot is also the full stop.
    ends_sentence = written.endswith(".") and written not in _TITLES and re.match(r"\s*(?:$|[A-Z])", rest)
    return _ABBREVIATIONS[written] + ("." if ends_sentence else "")


def _sub(pattern: re.Pattern, say: Callable[[re.Match], str], text: str) -> str:
    return pattern.sub(lambda match: f" {say(match)} " if match.group(0).strip() else match.group(0), text)


def normalize_english(text: str) -> str:
    """English text as it is read aloud: '$3.50' -> 'three dollars and fifty cents'."""
    text = _sub(_URL, _say_url, text)
    text = _sub(_EMAIL, _say_email, text)
    text = _sub(_ISO_DATE, _say_iso_date, text)
    text = _sub(_SLASH_DATE, _say_slash_date, text)
    text = _sub(_TIME, _say_time, text)
    text = _sub(_AM_PM, _say_am_pm, text)
    text = _sub(_PHONE, _say_phone, text)
    text = _sub(_CURRENCY, _say_currency, text)
    text = _sub(_ORDINAL, _say_ordinal, text)
    text = _sub(_UNIT, _say_unit, text)
    text = _ABBREVIATION.sub(_say_abbreviation, text)
    text = _NUMBER.sub(lambda match: _say_number(match, match.string), text)
    return text


def _normalize_numbers(text: str, lang: str) -> str:
    """Digits in another language's own number words, where num2words knows that language."""
    if lang not in CONVERTER_CLASSES:
        return text

    def say(match: re.Match) -> str:
        sign = "-" if match.group("sign") else ""
        number = match.group("number").replace(",", "") if lang == "en" else match.group("number").replace(".", "").replace(",", ".")
        try:
            return num2words(float(sign + number) if "." in number else int(sign + number), lang=lang)
        except (ValueError, NotImplementedError, OverflowError):
            return match.group(0)

    return _NUMBER.sub(say, text)


def normalize_text(text: str, language: str = "en") -> str:
    """The text in its spoken form for a language code ('en', 'de'...): emoji dropped, and for
    English currency, dates, times, phone numbers, units, ordinals, abbreviations, URLs and
    e-mail addresses written out; whitespace collapsed."""
    text = drop_emoji(text)
    text = normalize_english(text) if language == "en" else _normalize_numbers(text, language)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    return " ".join(text.split())
