"""A predict handler in the seed article's style, for the model its train handler saved: an
API Gateway HTTP API event whose body is `{"pixels": [784 values, 0-255]}` (what lambda-cnn's
predict takes, and what `deploy release`'s smoke test sends), answered with the digit and the
ten probabilities from Keras's `model.predict`.

The model loads once per execution environment (at init), as lambda-cnn's predict loads its
weights; each invocation runs one `model.predict`.
"""
import base64
import json
import os

import numpy as np
import tensorflow as tf

MODEL = tf.keras.models.load_model(os.environ.get("SEED_MODEL", "/var/task/seed.keras"))


def answer(status, body):
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def lambda_handler(event, context):
    try:
        body = event.get("body") or ""
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        pixels = np.asarray(json.loads(body)["pixels"], dtype=np.float32)
        if pixels.shape != (784,) or not np.all((pixels >= 0) & (pixels <= 255)):
            raise ValueError("pixels must be 784 values from 0 to 255")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        return answer(400, {"error": f"expected {{\"pixels\": [784 values 0-255]}}: {e}"})
    x = (pixels / 255.0).reshape(1, 28, 28, 1)
    p = MODEL.predict(x, verbose=0)[0]
    return answer(200, {"digit": int(np.argmax(p)), "probabilities": [float(v) for v in p]})
