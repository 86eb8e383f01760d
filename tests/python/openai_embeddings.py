"""The official OpenAI Python SDK's embeddings.create against the gateway (the local model), unchanged."""
import math
import os
import sys

from openai import OpenAI

client = OpenAI(base_url=os.environ["SWITCHYARD_URL"] + "/v1", api_key=os.environ["SWITCHYARD_KEY"], max_retries=0)

texts = ["The cat sat on the mat.", "A cat was sitting on a rug.", "Quarterly revenue grew by eight percent."]
# The SDK asks for base64 by default and decodes it; ask for floats too.
for encoding in (None, "float"):
    kwargs = {"encoding_format": encoding} if encoding else {}
    result = client.embeddings.create(model="all-minilm-l6-v2", input=texts, **kwargs)
    vectors = [item.embedding for item in result.data]
    assert [item.index for item in result.data] == [0, 1, 2]
    assert all(len(v) == 384 for v in vectors)
    assert result.usage.prompt_tokens > 0


    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


    assert cosine(vectors[0], vectors[1]) > 0.5 > cosine(vectors[0], vectors[2]), (encoding, cosine(vectors[0], vectors[1]))
single = client.embeddings.create(model="all-minilm-l6-v2", input="hello")
assert len(single.data) == 1
print("openai embeddings ok", file=sys.stderr)
