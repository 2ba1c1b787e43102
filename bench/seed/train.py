"""The seed article's Lambda handler (§5.2), as written there, with two changes a Lambda image
needs and a benchmark needs, each marked below:

1. MNIST comes from the files packed into the image (as lambda-cnn's train image has them), not
   from `tf.keras.datasets.mnist.load_data()`'s download: a function should not fetch its data
   set at every cold start, and the local data plane has no internet.
2. The event may shorten the run: `{"epochs": E, "limit": N}` (both optional; `{}` is the
   article's run: 5 epochs over the 60,000 training images). lambda-cnn's train function takes
   the same event, so `deploy release`'s smoke test and `deploy tune` send both the same.

The trained model is saved (SEED_MODEL_OUT, when set) for the predict handler's image.
"""
import gzip
import json
import os

import numpy as np
import tensorflow as tf

MNIST_DIR = os.environ.get("MNIST_DIR", "/var/task/mnist")


def load_data():
    # Change 1: the same arrays `tf.keras.datasets.mnist.load_data()` returns, from IDX files.
    def read(name, header):
        with gzip.open(os.path.join(MNIST_DIR, name + ".gz"), "rb") as f:
            return np.frombuffer(f.read(), np.uint8, offset=header)

    x_train = read("train-images-idx3-ubyte", 16).reshape(-1, 28, 28)
    y_train = read("train-labels-idx1-ubyte", 8)
    x_test = read("t10k-images-idx3-ubyte", 16).reshape(-1, 28, 28)
    y_test = read("t10k-labels-idx1-ubyte", 8)
    return (x_train, y_train), (x_test, y_test)


def lambda_handler(event, context):
    # 加载数据 (load the data)
    (x_train, y_train), (x_test, y_test) = load_data()

    # Change 2: an optional shorter run.
    event = event if isinstance(event, dict) else {}
    epochs = int(event.get("epochs", 5))
    limit = event.get("limit")
    if limit is not None:
        x_train, y_train = x_train[: int(limit)], y_train[: int(limit)]

    # 预处理数据 (preprocess)
    x_train = x_train / 255.0
    x_test = x_test / 255.0
    x_train = x_train.reshape(-1, 28, 28, 1)
    x_test = x_test.reshape(-1, 28, 28, 1)

    # 构建模型 (build the model)
    model = tf.keras.Sequential([
        tf.keras.layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
        tf.keras.layers.MaxPooling2D((2, 2)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(128, activation='relu'),
        tf.keras.layers.Dense(10, activation='softmax')
    ])

    # 训练模型 (train)
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    model.fit(x_train, y_train, epochs=epochs, verbose=2)

    # 评估模型 (evaluate)
    test_loss, test_acc = model.evaluate(x_test, y_test, verbose=2)
    print(f"Test accuracy: {test_acc:.2f}")

    if os.environ.get("SEED_MODEL_OUT"):
        model.save(os.environ["SEED_MODEL_OUT"])

    # 返回结果 (answer)
    return {
        "statusCode": 200,
        "body": json.dumps(f"Test accuracy: {test_acc:.2f}")
    }


if __name__ == "__main__":
    # Build time: train the model the predict image serves (`build.sh`).
    print(json.dumps(lambda_handler(json.loads(os.environ.get("SEED_EVENT", "{}")), None)))
