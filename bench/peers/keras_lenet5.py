# The seed's own Keras LeNet-5: ../shared/seeds/000_64128870b7b1bb67.txt, Question 6
# (Q6_lenet_mnist.py), run on Fashion-MNIST by bench/train_vs_peers.py in the peers' virtualenv.
#
# Changed from the seed, and why (every other line is the seed's, in its order):
#   1. `tf.keras.datasets.mnist.load_data()` -> `harness.load_data()`: Keras downloads, this machine
#      is offline, and the benchmark is on Fashion-MNIST; harness reads Debian's Fashion-MNIST IDX
#      files into the same uint8 arrays load_data() returns.
#   2. `layers.AveragePooling2D()` -> `layers.AveragePooling2D(pool_size=2)` (twice): Keras 3 has no
#      default pool_size; 2 was the Keras 2 default the seed relied on.
#   3. `epochs = 10` -> `epochs = EPOCHS`, the seed's 10 unless the benchmark passes --epochs
#      (its --quick smoke run).
#   4. `model.fit(...)` gets `callbacks=[timer]`, a callback that only reads the clock per epoch.
#   5. The last line reports the figures as one JSON line; the .h5 and history files go to a
#      temporary directory (harness.setup() moves there), never into the repository.

# The seed's lines are kept verbatim, so ruff may neither reformat nor re-sort them:
# fmt: off
# ruff: noqa: E402, I001

import harness  # bench/peers/harness.py

EPOCHS = harness.setup(default_epochs=10)

import tensorflow as tf
from tensorflow.keras import layers, models
import time

# 1. Load and preprocess MNIST
(x_train, y_train), (x_test, y_test) = harness.load_data()  # changed (1)
# LeNet originally used 32x32; we'll resize to 32x32 and normalize
import numpy as np
x_train = np.expand_dims(x_train, axis=-1).astype("float32") / 255.0
x_test = np.expand_dims(x_test, axis=-1).astype("float32") / 255.0

# Resize to 32x32
x_train = tf.image.resize(x_train, [32, 32]).numpy()
x_test = tf.image.resize(x_test, [32, 32]).numpy()

# One-hot
num_classes = 10
y_train_cat = tf.keras.utils.to_categorical(y_train, num_classes)
y_test_cat = tf.keras.utils.to_categorical(y_test, num_classes)

# 2. LeNet-5 like model
def LeNet5(input_shape=(32,32,1), num_classes=10):
    model = models.Sequential([
        layers.Conv2D(6, kernel_size=5, activation='tanh', input_shape=input_shape, padding='valid'),
        layers.AveragePooling2D(pool_size=2),  # S2  # changed (2)
        layers.Conv2D(16, kernel_size=5, activation='tanh', padding='valid'),
        layers.AveragePooling2D(pool_size=2),  # S4  # changed (2)
        layers.Conv2D(120, kernel_size=5, activation='tanh'),  # C5
        layers.Flatten(),
        layers.Dense(84, activation='tanh'),
        layers.Dense(num_classes, activation='softmax')
    ])
    return model

model = LeNet5()
model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
model.summary()

# 3. Train
batch_size = 128
epochs = EPOCHS  # changed (3)

timer = harness.epoch_timer()  # changed (4)
start = time.time()
history = model.fit(x_train, y_train_cat, batch_size=batch_size, epochs=epochs,
                    validation_split=0.1, verbose=2, callbacks=[timer])  # changed (4)
end = time.time()

train_time = end - start
print(f"Training time (s): {train_time:.2f}")

# 4. Evaluate
test_loss, test_acc = model.evaluate(x_test, y_test_cat, verbose=0)
print(f"Test accuracy: {test_acc:.4f}")

# Save model and history
model.save("lenet_mnist.h5")
import json
with open("lenet_mnist_history.json", "w") as f:
    json.dump({k: [float(x) for x in v] for k,v in history.history.items()}, f)

harness.report("keras_lenet5", timer, train_time, test_acc, len(x_train) - int(len(x_train) * 0.1))  # changed (5)
