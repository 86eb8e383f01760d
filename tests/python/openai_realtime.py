"""The official OpenAI Python SDK's realtime client (`openai[realtime]`), unchanged, against the gateway's
/v1/realtime (the mock OpenAI Realtime upstream behind it): real speech in (espeak-ng, resampled to PCM16 24 kHz
by ffmpeg), committed, a response asked for; the transcript, text and audio deltas and response.done come back."""
import base64
import os
import subprocess
import tempfile

from openai import OpenAI

client = OpenAI(base_url=os.environ["SWITCHYARD_URL"] + "/v1", api_key=os.environ["SWITCHYARD_KEY"], max_retries=0)

workdir = tempfile.mkdtemp()
wav = os.path.join(workdir, "speech.wav")
pcm = os.path.join(workdir, "speech.pcm")
subprocess.run(["espeak-ng", "-w", wav, "What is the weather like on the moon?"], check=True)
subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", wav, "-f", "s16le", "-ac", "1", "-ar", "24000", pcm],
               check=True)
with open(pcm, "rb") as f:
    speech = f.read()
seconds_in = len(speech) / 48000

with client.realtime.connect(model="gpt-realtime") as connection:
    created = connection.recv()
    assert created.type == "session.created", created
    connection.session.update(session={"type": "realtime", "instructions": "Be brief."})
    # The audio in pieces of 0.2 s, as a microphone would send it.
    for start in range(0, len(speech), 9600):
        connection.input_audio_buffer.append(audio=base64.b64encode(speech[start:start + 9600]).decode())
    connection.input_audio_buffer.commit()
    connection.response.create()
    transcript, text, audio, done = None, "", b"", None
    for event in connection:
        if event.type == "conversation.item.input_audio_transcription.completed":
            transcript = event.transcript
        elif event.type == "response.output_audio_transcript.delta":
            text += event.delta
        elif event.type == "response.output_audio.delta":
            audio += base64.b64decode(event.delta)
        elif event.type == "error":
            raise AssertionError(event)
        elif event.type == "response.done":
            done = event
            break

assert transcript is not None and transcript.startswith("heard "), transcript
assert abs(float(transcript.split()[1]) - seconds_in) < 0.11, (transcript, seconds_in)
assert text == "Hello from the mock.", text
assert len(audio) == 5 * 2400 * 2, len(audio)  # 0.5 s of PCM16 at 24 kHz
assert done.response.status == "completed", done
assert done.response.usage.output_token_details.audio_tokens == 25, done.response.usage
print("ok", round(seconds_in, 2), "s in,", len(audio) / 48000, "s out")
