"""ComfyUI's own documented API usage: the functions of ComfyUI's script_examples/websockets_api_example.py
(queue a prompt with a client-chosen prompt_id, read its history, fetch each image through /view), as
ComfyUI ships them, with `server_address` the only thing a user changes. Kept verbatim in behaviour so
the tests show the front door answering the documented flow; a test installs a urllib opener that
adds the API key header (the other thing a user adds)."""

# ruff: noqa: UP032  (the example's own str.format calls, kept as ComfyUI wrote them)

import json
import urllib.parse
import urllib.request
import uuid

server_address = "127.0.0.1:8188"
client_id = str(uuid.uuid4())


def queue_prompt(prompt, prompt_id):
    p = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
    data = json.dumps(p).encode("utf-8")
    req = urllib.request.Request("http://{}/prompt".format(server_address), data=data)
    urllib.request.urlopen(req).read()


def get_image(filename, subfolder, folder_type):
    data = {"filename": filename, "subfolder": subfolder, "type": folder_type}
    url_values = urllib.parse.urlencode(data)
    with urllib.request.urlopen("http://{}/view?{}".format(server_address, url_values)) as response:
        return response.read()


def get_history(prompt_id):
    with urllib.request.urlopen("http://{}/history/{}".format(server_address, prompt_id)) as response:
        return json.loads(response.read())


def get_images(ws, prompt):
    prompt_id = str(uuid.uuid4())
    queue_prompt(prompt, prompt_id)
    output_images = {}
    while True:
        out = ws.recv()
        if isinstance(out, str):
            message = json.loads(out)
            if message["type"] == "executing":
                data = message["data"]
                if data["node"] is None and data["prompt_id"] == prompt_id:
                    break  # Execution is done
        else:
            continue  # previews are binary data

    history = get_history(prompt_id)[prompt_id]
    for node_id in history["outputs"]:
        node_output = history["outputs"][node_id]
        images_output = []
        if "images" in node_output:
            for image in node_output["images"]:
                image_data = get_image(image["filename"], image["subfolder"], image["type"])
                images_output.append(image_data)
        output_images[node_id] = images_output

    return output_images
