# The seed's own Keras simple CNN: ../shared/seeds/002_7e2d348d67883881.txt, "Ans: 6", run on
# Fashion-MNIST by bench/train_vs_peers.py in the peers' virtualenv.
#
# Changed from the seed, and why (every other line is the seed's, in its order):
#   1. `from tensorflow.keras.datasets import mnist` / `mnist.load_data()` -> `harness.load_data()`:
#      Keras downloads, this machine is offline, and the benchmark is on Fashion-MNIST; harness
#      reads Debian's Fashion-MNIST IDX files into the same uint8 arrays load_data() returns.
#   2. `epochs=5` -> `epochs=EPOCHS`, the seed's 5 unless the benchmark passes --epochs (its --quick
#      smoke run).
#   3. `model.fit(...)` gets `callbacks=[timer]`, a callback that only reads the clock per epoch, and
#      is timed (the seed prints no training time).
#   4. The last line reports the figures as one JSON line.
# The seed's verbose setting (the default) is kept: Keras prints its progress bar.

# The seed's lines are kept verbatim, so ruff may neither reformat nor re-sort them:
# fmt: off
# ruff: noqa: E402, F401, I001

import harness  # bench/peers/harness.py

EPOCHS = harness.setup(default_epochs=5)

import tensorflow as tf
from tensorflow.keras import layers, models
from tensorflow.keras.utils import to_categorical
import time  # changed (3)


(x_train, y_train), (x_test, y_test) = harness.load_data()  # changed (1)
x_train = x_train.reshape((-1,28,28,1)).astype('float32') / 255.0
x_test = x_test.reshape((-1,28,28,1)).astype('float32') / 255.0
y_train_cat = to_categorical(y_train, 10)
y_test_cat = to_categorical(y_test, 10)


model = models.Sequential([
    layers.Conv2D(32, (3,3), activation='relu', input_shape=(28,28,1)),
    layers.MaxPooling2D((2,2)),
    layers.Conv2D(64, (3,3), activation='relu'),
    layers.MaxPooling2D((2,2)),
    layers.Flatten(),
    layers.Dense(128, activation='relu'),
    layers.Dropout(0.4),
    layers.Dense(10, activation='softmax')
])

model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])


timer = harness.epoch_timer()  # changed (3)
start = time.time()  # changed (3)
history = model.fit(x_train, y_train_cat, epochs=EPOCHS, batch_size=128, validation_split=0.1,  # changed (2)
                    callbacks=[timer])  # changed (3)
train_time = time.time() - start  # changed (3)


test_loss, test_acc = model.evaluate(x_test, y_test_cat, verbose=0)
print(f"Test accuracy: {test_acc:.4f}")

harness.report("keras_simple_cnn", timer, train_time, test_acc, len(x_train) - int(len(x_train) * 0.1))  # changed (4)
