"""The official ElevenLabs Python SDK's WebSocket text to speech (`client.text_to_speech.convert_realtime`, the
`/v1/text-to-speech/{voice_id}/stream-input` WebSocket), unchanged, against a base URL: a few text chunks in, the
audio collected. Prints one JSON line: {"audio_bytes", "characters", "output_format", "seconds"}; exits non-zero on
failure, after a JSON line {"error", "status_code"} (an ApiError, a refused handshake, or no end within
$ELEVENLABS_TIMEOUT seconds, 30 by default: the SDK itself waits forever).

Usage: elevenlabs_tts_ws.py [BASE_URL [API_KEY [VOICE_ID [OUTPUT_FORMAT]]]]
(defaults: $ELEVENLABS_BASE_URL, $ELEVENLABS_API_KEY, $ELEVENLABS_VOICE_ID or Rachel, $ELEVENLABS_OUTPUT_FORMAT or
pcm_24000; $ELEVENLABS_MODEL_ID or eleven_flash_v2_5)."""
import json
import os
import signal
import sys
import urllib.parse

import websockets
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError
from elevenlabs.realtime_tts import text_chunker

args = sys.argv[1:] + [None] * 4
base_url = args[0] or os.environ["ELEVENLABS_BASE_URL"]
api_key = args[1] or os.environ["ELEVENLABS_API_KEY"]
voice_id = args[2] or os.environ.get("ELEVENLABS_VOICE_ID", "21m00Tcm4TlvDq8ikWAM")
output_format = args[3] or os.environ.get("ELEVENLABS_OUTPUT_FORMAT", "pcm_24000")
model_id = os.environ.get("ELEVENLABS_MODEL_ID", "eleven_flash_v2_5")

CHUNKS = ["Hello ", "from the ", "mock. ", "How are ", "you today?"]

client = ElevenLabs(api_key=api_key, base_url=base_url.rstrip("/"))
# convert_realtime swaps the base URL's scheme for wss whatever it was (elevenlabs 2.78.0, realtime_tts.py), which
# suits https only; its URL builder maps http to ws, so a plain-HTTP base is given to it as it is.
if urllib.parse.urlparse(base_url).scheme == "http":
    client.text_to_speech._ws_base_url = base_url.rstrip("/")



def timed_out(*_):
    raise TimeoutError("no end of the stream in time")


signal.signal(signal.SIGALRM, timed_out)
signal.alarm(int(os.environ.get("ELEVENLABS_TIMEOUT", "30")))
try:
    audio = b"".join(client.text_to_speech.convert_realtime(
        voice_id=voice_id, text=iter(CHUNKS), model_id=model_id, output_format=output_format))
except ApiError as e:
    print(json.dumps({"error": e.body, "status_code": e.status_code}, default=str))
    sys.exit(1)
except websockets.exceptions.InvalidStatus as e:
    print(json.dumps({"error": e.response.body.decode(errors="replace"), "status_code": e.response.status_code}))
    sys.exit(1)
except (TimeoutError, websockets.exceptions.WebSocketException) as e:
    print(json.dumps({"error": repr(e), "status_code": None}))
    sys.exit(1)
signal.alarm(0)

# What the SDK sent: its chunker's pieces (a space is added at the end).
characters = sum(len(piece) for piece in text_chunker(iter(CHUNKS)))
codec, rate = output_format.split("_")[:2]
bytes_per_second = {"pcm": 2 * int(rate), "ulaw": int(rate)}.get(codec)
assert audio, "no audio"
print(json.dumps({"audio_bytes": len(audio), "characters": characters, "output_format": output_format,
                  "seconds": round(len(audio) / bytes_per_second, 3) if bytes_per_second else None}))
