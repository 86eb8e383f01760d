"""The official OpenAI Python SDK, unchanged, against the gateway: a chat, a streamed chat, the model list, errors."""
import os
import sys

import openai
from openai import OpenAI

base_url = os.environ["SWITCHYARD_URL"] + "/v1"
client = OpenAI(base_url=base_url, api_key=os.environ["SWITCHYARD_KEY"], max_retries=0)

completion = client.chat.completions.create(
    model="sim-chat", messages=[{"role": "user", "content": "Say hello"}], max_tokens=8
)
assert completion.object == "chat.completion", completion
text = completion.choices[0].message.content
assert text and len(text.split()) == 8, text
assert completion.choices[0].finish_reason == "length"
assert completion.usage.completion_tokens == 8

pieces = []
usage = None
stream = client.chat.completions.create(
    model="sim-chat",
    messages=[{"role": "user", "content": "Say hello"}],
    max_tokens=8,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
assert "".join(pieces) == text, (pieces, text)
assert usage is not None and usage.completion_tokens == 8, usage

models = [m.id for m in client.models.list()]
assert "sim-chat" in models and "gpt-4" in models, models

try:
    client.chat.completions.create(model="invalid-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("an unknown model must fail")
except openai.BadRequestError as e:
    assert e.code == "unsupported_model", e
    assert "Unsupported task type: invalid-model" in str(e), e

bad = OpenAI(base_url=base_url, api_key="sy_live_wrong", max_retries=0)
try:
    bad.models.list()
    raise AssertionError("a wrong key must fail")
except openai.AuthenticationError:
    pass

print("openai sdk ok", file=sys.stderr)
