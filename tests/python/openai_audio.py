"""The official OpenAI Python SDK's audio.speech.create and audio.transcriptions.create against the gateway
(ElevenLabs behind it), unchanged."""
import os
import sys
import tempfile
import wave

from openai import OpenAI

client = OpenAI(base_url=os.environ["SWITCHYARD_URL"] + "/v1", api_key=os.environ["SWITCHYARD_KEY"], max_retries=0)
TEXT = "Switchyard speaks through the OpenAI SDK."
SECONDS_PER_CHAR = 0.06  # what the mock speaks


def wav_seconds(path):
    with wave.open(path, "rb") as w:
        return w.getnframes() / w.getframerate()


workdir = tempfile.mkdtemp()
speech_path = os.path.join(workdir, "speech.wav")
speech = client.audio.speech.create(model="eleven-labs-tts", voice="Rachel", input=TEXT, response_format="wav")
speech.write_to_file(speech_path)
expected = len(TEXT) * SECONDS_PER_CHAR
assert abs(wav_seconds(speech_path) - expected) < 0.01, (wav_seconds(speech_path), expected)

streamed_path = os.path.join(workdir, "streamed.mp3")
with client.audio.speech.with_streaming_response.create(
    model="eleven-labs-tts", voice="adam", input=TEXT, response_format="mp3"
) as response:
    assert response.headers["content-type"] == "audio/mpeg", response.headers
    response.stream_to_file(streamed_path)
with open(streamed_path, "rb") as f:
    head = f.read(3)
assert head == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0), head

with open(speech_path, "rb") as audio:
    transcript = client.audio.transcriptions.create(model="eleven-labs-stt", file=audio)
assert transcript.text.startswith("transcribed "), transcript.text

with open(speech_path, "rb") as audio:
    verbose = client.audio.transcriptions.create(
        model="eleven-labs-stt", file=audio, response_format="verbose_json", timestamp_granularities=["word"]
    )
assert abs(verbose.duration - expected) < 0.01, verbose.duration
assert verbose.words and verbose.words[0].word == "transcribed", verbose.words
print("openai audio ok", file=sys.stderr)
