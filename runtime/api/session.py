"""WS /ws: a conversation session over a WebSocket.

Client -> server, JSON text messages:
  {"type": "start", "image": <base64>? | "avatar_id": ?, "voice": ?, "fps": ?, "still": ?, ...}   first, once
      (the fields of POST /generate except text and audio)
  {"type": "say", "text": "..."}                                                 any number
Server -> client:
  {"event": "ready", "session_id", "backend", "tts_engine", "fps"}
  binary messages: the fMP4 init segment, then one fragment each (append them to one SourceBuffer)
  {"event": "utterance_started" | "utterance_finished", "id", "at": media seconds}
  {"event": "queued", "id", "text"} after each say
  {"error", "detail"} for anything that went wrong (a bad start closes the socket with 1008)
Closing the socket stops all work of the session at once.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from ..cancellation import CancelToken
from ..errors import ServiceBusyError, UserInputError
from ..generation import GenerationService, new_request_id
from .routes import _to_generation_request

log = logging.getLogger(__name__)
router = APIRouter()

_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a start message carries a base64 portrait
_MAX_QUEUED_MESSAGES = 200  # ~100 s of fragments a client has not read: it is gone or too slow


def _error(error: str, detail: str) -> dict:
    return {"error": error, "detail": detail}


async def _receive_json(websocket: WebSocket) -> dict:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise UserInputError("messages to the server are JSON text", error="invalid_message")
    if len(text) > _MAX_MESSAGE_BYTES:
        raise UserInputError(f"message is {len(text)} bytes; the limit is {_MAX_MESSAGE_BYTES}",
                             error="message_too_large", status_code=413)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"not valid JSON: {exc}", error="invalid_json") from exc
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise UserInputError('each message is a JSON object with a "type"', error="invalid_message")
    return body


@router.websocket("/ws")
async def conversation(websocket: WebSocket) -> None:
    await websocket.accept()
    state = websocket.app.state
    if not state.lifecycle.accepting:
        await websocket.send_json(_error("not_ready", "the server is shutting down" if state.lifecycle.draining
                                         else "the models are still loading; retry shortly"))
        await websocket.close(code=1013)
        return
    svc: GenerationService = state.service.generation
    session_id = new_request_id()
    token = websocket.state.cancel_token = CancelToken()  # a middleware may cancel it too (deadline, shutdown)
    loop = asyncio.get_running_loop()
    outbox: asyncio.Queue = asyncio.Queue()

    def emit(message) -> None:  # called from the session's threads
        loop.call_soon_threadsafe(outbox.put_nowait, message)

    try:
        start = await _receive_json(websocket)
        if start["type"] != "start":
            raise UserInputError('the first message must be {"type": "start", ...}', error="invalid_message")
        fields = {key: value for key, value in start.items() if key != "type"}
        if "text" in fields or "audio" in fields:
            raise UserInputError('send text with {"type": "say", "text": ...} after the start', error="invalid_message")
        job = _to_generation_request(fields, {}, session_id)
        if fields.get("avatar_id"):  # a portrait registered with POST /avatars
            job.portrait = (await run_in_threadpool(state.avatars.get, str(fields["avatar_id"]))).portrait
        conversation = await run_in_threadpool(svc.open_conversation, job, token, emit)
    except UserInputError as error:
        await websocket.send_json({**_error(error.error, error.detail), "session_id": session_id})
        await websocket.close(code=1008)
        return
    except ServiceBusyError as error:
        await websocket.send_json({**_error("busy", str(error)), "retry_after_s": error.retry_after_s})
        await websocket.close(code=1013)
        return
    except WebSocketDisconnect:
        return

    await websocket.send_json({"event": "ready", "session_id": session_id, "backend": svc.avatar.name,
                               "tts_engine": svc.tts.name, "fps": job.fps or svc.settings.default_fps})
    log.info("session %s started (%s)", session_id, svc.avatar.name)

    def run() -> None:
        with state.lifecycle.track(token):  # a drain past its grace ends the session
            conversation.run()
        state.metrics.frames.labels(backend=svc.avatar.name).inc(conversation.frames)

    worker = threading.Thread(target=run, name=f"session-{session_id}", daemon=True)
    worker.start()

    async def send_all() -> None:
        while True:
            message = await outbox.get()
            if outbox.qsize() > _MAX_QUEUED_MESSAGES:
                token.cancel("the client does not read the stream")
                await websocket.close(code=1008)
                return
            if isinstance(message, bytes):
                await websocket.send_bytes(message)
            else:
                await websocket.send_json(message)

    sender = asyncio.create_task(send_all())
    try:
        while not token.cancelled:
            try:
                message = await _receive_json(websocket)
                if message["type"] != "say" or not isinstance(message.get("text"), str):
                    raise UserInputError('send {"type": "say", "text": "..."}', error="invalid_message")
                text = message["text"]
                utterance = conversation.say(text)
                emit({"event": "queued", "id": utterance, "text": text[:200]})
            except UserInputError as error:
                emit(_error(error.error, error.detail))
    except (WebSocketDisconnect, RuntimeError):  # RuntimeError: receive after the socket closed
        pass
    finally:
        token.cancel("the client disconnected")
        sender.cancel()
        log.info("session %s ended after %d frames", session_id, conversation.frames)
