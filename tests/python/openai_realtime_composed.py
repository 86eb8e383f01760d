"""The official OpenAI Python SDK's realtime client (`openai[realtime]`), unchanged, against the gateway's
/v1/realtime with a chat model (composed mode: the gateway is the realtime server, speech-to-text, the chat model
and text-to-speech behind it). Real speech in (espeak-ng, resampled to PCM16 24 kHz by ffmpeg) in pieces of 0.2 s.
Turn 1: no turn detection, commit and response.create by hand. Turn 2: server VAD back on, speech then a second of
quiet, no commit: the gateway commits and answers by itself.

Every server event is also checked against the SDK's own types (strict pydantic validation of the event the SDK
parsed): a missing or mistyped field fails the script with the event named. Prints one line of JSON at the end:
{"transcripts": [...], "replies": [...], "audio_seconds": [...], "usage": [...]}.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import typing

import pydantic
from openai import OpenAI
from openai.types.realtime import RealtimeServerEvent

client = OpenAI(base_url=os.environ["SWITCHYARD_URL"] + "/v1", api_key=os.environ["SWITCHYARD_KEY"], max_retries=0)
# The SDK's class of each server event type (the members of its discriminated union).
EVENT_TYPES = {typing.get_args(cls.model_fields["type"].annotation)[0]: cls
               for cls in typing.get_args(typing.get_args(RealtimeServerEvent)[0])}
problems = []  # (event type, what the SDK's types say is wrong)


def speech(text):
    """`text` spoken by espeak-ng, as PCM16 mono at 24 kHz."""
    workdir = tempfile.mkdtemp()
    wav, pcm = os.path.join(workdir, "speech.wav"), os.path.join(workdir, "speech.pcm")
    subprocess.run(["espeak-ng", "-w", wav, text], check=True)
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", wav, "-f", "s16le", "-ac", "1", "-ar", "24000", pcm],
                   check=True)
    with open(pcm, "rb") as f:
        return f.read()


def append(connection, pcm):
    """The audio in pieces of 0.2 s, as a microphone would send it."""
    for start in range(0, len(pcm), 9600):
        connection.input_audio_buffer.append(audio=base64.b64encode(pcm[start:start + 9600]).decode())


def check(event):
    """The event as the SDK parsed it, validated against the SDK's types."""
    cls = EVENT_TYPES.get(event.type)
    if cls is None:
        problems.append((event.type, "not a server event type of the SDK"))
        return
    try:
        cls.model_validate(event.to_dict(mode="json", exclude_unset=True))
    except pydantic.ValidationError as e:
        why = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})"
                        for err in e.errors()[:5])
        problems.append((event.type, why))


def turn(connection, label):
    """Events up to response.done: the transcript of the input, the reply's text and audio, response.done."""
    transcript, text, audio, kinds = None, "", b"", []
    for event in connection:
        check(event)
        kinds.append(event.type)
        if event.type == "conversation.item.input_audio_transcription.completed":
            transcript = event.transcript
            print(f"{label}: transcript {transcript!r}", file=sys.stderr)
        elif event.type == "conversation.item.input_audio_transcription.failed":
            raise AssertionError(f"{label}: the transcription failed: {event}")
        elif event.type == "response.output_audio_transcript.delta":
            print(f"{label}: transcript delta {event.delta!r}", file=sys.stderr)
            text += event.delta
        elif event.type == "response.output_audio.delta":
            piece = base64.b64decode(event.delta)
            assert len(piece) > 0, event
            audio += piece
        elif event.type == "error":
            raise AssertionError(f"{label}: {event}")
        elif event.type == "response.done":
            print(f"{label}: events {kinds}", file=sys.stderr)
            return transcript, text, audio, event, kinds
    raise AssertionError(f"{label}: the connection closed before response.done: {kinds}")


def judge(label, transcript, text, audio, done, pcm_in):
    assert transcript is not None and transcript.startswith("transcribed "), (label, transcript)
    assert text, (label, "no transcript delta")
    assert len(audio) > 0 and len(audio) % 2 == 0, (label, len(audio))  # PCM16
    response = done.response
    assert response.status == "completed", (label, done)
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0, (label, usage)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens, (label, usage)
    assert response.output and response.output[0].content[0].transcript == text, (label, response.output)
    return {"transcript": transcript, "reply": text, "audio_seconds": len(audio) / 48000, "input_seconds":
            len(pcm_in) / 48000, "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}}


first = speech("What is the weather like on the moon?")
second = speech("Tell me more about the craters")

with client.realtime.connect(model="claude-3-haiku") as connection:
    created = connection.recv()
    check(created)
    assert created.type == "session.created", created
    assert created.session.model == "claude-3-haiku", created.session

    # Turn 1: no turn detection, committed and answered by hand.
    connection.session.update(session={"type": "realtime", "instructions": "Be brief.",
                                       "audio": {"input": {"turn_detection": None}}})
    updated = connection.recv()
    check(updated)
    assert updated.type == "session.updated", updated
    assert updated.session.audio.input.turn_detection is None, updated.session
    append(connection, first)
    connection.input_audio_buffer.commit()
    connection.response.create()
    turns = [judge("turn 1", *turn(connection, "turn 1")[:4], first)]
    # The mock transcriber names the bytes it got: a WAV (44 bytes of header) of exactly what was appended.
    assert turns[0]["transcript"] == f"transcribed {len(first) + 44} bytes", (turns[0], len(first))

    # Turn 2: server VAD on again; speech then a second of quiet, no commit, no response.create.
    connection.session.update(session={"type": "realtime",
                                       "audio": {"input": {"turn_detection": {"type": "server_vad"}}}})
    append(connection, second + bytes(48000))
    transcript, text, audio, done, kinds = turn(connection, "turn 2")
    assert kinds[0] == "session.updated", kinds
    for before, after in [("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"),
                          ("input_audio_buffer.speech_stopped", "input_audio_buffer.committed"),
                          ("conversation.item.input_audio_transcription.completed", "response.created")]:
        assert before in kinds and after in kinds and kinds.index(before) < kinds.index(after), (before, after, kinds)
    assert kinds.count("input_audio_buffer.committed") == 1, ("one turn, one commit", kinds)
    turns.append(judge("turn 2", transcript, text, audio, done, second))

for kind, why in dict.fromkeys(problems):  # each distinct problem once
    print(f"the SDK's types refuse {kind}: {why}", file=sys.stderr)
assert not problems, f"{len(problems)} server event(s) do not match the SDK's types (see above)"
print(json.dumps({"transcripts": [t["transcript"] for t in turns], "replies": [t["reply"] for t in turns],
                  "audio_seconds": [t["audio_seconds"] for t in turns], "input_seconds": [t["input_seconds"] for t in turns],
                  "usage": [t["usage"] for t in turns]}), flush=True)
