"""The official OpenAI Python SDK's images.generate against the gateway (Flux behind it), unchanged."""
import base64
import os
import struct
import sys

import urllib.request

from openai import OpenAI

client = OpenAI(base_url=os.environ["SWITCHYARD_URL"] + "/v1", api_key=os.environ["SWITCHYARD_KEY"], max_retries=0)


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    return struct.unpack(">II", data[16:24])


inline = client.images.generate(model="flux-1-schnell", prompt="a lighthouse", size="512x384", response_format="b64_json")
assert png_size(base64.b64decode(inline.data[0].b64_json)) == (512, 384)

linked = client.images.generate(model="flux-1-schnell", prompt="a lighthouse", size="256x256")
request = urllib.request.Request(linked.data[0].url, headers={"Authorization": "Bearer " + os.environ["SWITCHYARD_KEY"]})
with urllib.request.urlopen(request) as response:
    image = response.read()
assert png_size(image) == (256, 256)
print("openai images ok", file=sys.stderr)
