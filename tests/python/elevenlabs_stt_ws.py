"""The official ElevenLabs Python SDK's realtime speech to text (`client.speech_to_text.realtime.connect`, the
`/v1/speech-to-text/realtime` WebSocket), unchanged, against a base URL: the PCM16 mono audio of a WAV file in
0.1 s chunks, committed; the committed transcript comes back. Prints one JSON line: {"transcript", "partials",
"audio_seconds", "session_id"}; exits non-zero on failure, after a JSON line {"error", "status_code"} (an error
event, a close, a refused handshake, or no committed transcript within $ELEVENLABS_TIMEOUT seconds, 15 by default).

Usage: elevenlabs_stt_ws.py [BASE_URL [API_KEY]] WAV_FILE
(defaults: $ELEVENLABS_BASE_URL, $ELEVENLABS_API_KEY; $ELEVENLABS_STT_MODEL_ID or scribe_v2_realtime). The WAV is
16-bit mono at 8, 16, 22.05, 24, 44.1 or 48 kHz (16 kHz, as a microphone pipeline would send it)."""
import asyncio
import base64
import json
import os
import sys
import wave

import websockets
from elevenlabs import AudioFormat, CommitStrategy, RealtimeEvents
from elevenlabs.client import ElevenLabs

args = sys.argv[1:]
wav_path = args[-1]
base_url = (args[0] if len(args) > 1 else None) or os.environ["ELEVENLABS_BASE_URL"]
api_key = (args[1] if len(args) > 2 else None) or os.environ["ELEVENLABS_API_KEY"]
model_id = os.environ.get("ELEVENLABS_STT_MODEL_ID", "scribe_v2_realtime")

with wave.open(wav_path, "rb") as w:
    if w.getsampwidth() != 2 or w.getnchannels() != 1:
        sys.exit(f"{wav_path}: needs 16-bit mono PCM, got {8 * w.getsampwidth()}-bit x {w.getnchannels()}")
    rate = w.getframerate()
    pcm = w.readframes(w.getnframes())


async def main():
    # The SDK derives ws:// or wss:// from the base URL's http:// or https://.
    client = ElevenLabs(api_key=api_key, base_url=base_url.rstrip("/"))
    try:
        connection = await client.speech_to_text.realtime.connect({
            "model_id": model_id,
            "audio_format": AudioFormat(f"pcm_{rate}"),
            "sample_rate": rate,
            "commit_strategy": CommitStrategy.MANUAL,
        })
    except websockets.exceptions.InvalidStatus as e:
        return {"error": e.response.body.decode(errors="replace"), "status_code": e.response.status_code}
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    seen = {"partials": 0, "session_id": None}

    def finish(value):
        if not done.done():
            done.set_result(value)

    connection.on(RealtimeEvents.SESSION_STARTED, lambda data: seen.update(session_id=data.get("session_id")))
    connection.on(RealtimeEvents.PARTIAL_TRANSCRIPT, lambda data: seen.update(partials=seen["partials"] + 1))
    connection.on(RealtimeEvents.COMMITTED_TRANSCRIPT, lambda data: finish(("ok", data["text"])))
    connection.on(RealtimeEvents.ERROR, lambda data: finish(("error", data)))
    connection.on(RealtimeEvents.CLOSE, lambda info: finish(("error", {"closed": info})))

    step = rate // 10 * 2  # 0.1 s of PCM16
    try:
        for start in range(0, len(pcm), step):
            await connection.send({"audio_base_64": base64.b64encode(pcm[start:start + step]).decode()})
        await connection.commit()
        kind, value = await asyncio.wait_for(done, timeout=float(os.environ.get("ELEVENLABS_TIMEOUT", "15")))
    except (websockets.exceptions.WebSocketException, TimeoutError) as e:
        kind, value = "error", repr(e)
    finally:
        await connection.close()
    if kind != "ok":
        return {"error": value, "status_code": None}
    return {"transcript": value, "partials": seen["partials"], "audio_seconds": len(pcm) / (2 * rate),
            "session_id": seen["session_id"]}


result = asyncio.run(main())
print(json.dumps(result, default=str))
sys.exit(1 if "error" in result else 0)
