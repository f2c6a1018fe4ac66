# The Keras MNIST tutorial's model, pasted as the tutorial writes it. Its fit() and evaluate() lines are
# left out (they would train at import, on data the file loads itself); its compile() line stays and is
# ignored: mnistlab trains with the recipe's optimizer, rate and loss (the run says so as it starts).
#
#     mnistlab train --recipe seed-cnn --model examples/keras_tutorial.py:network --seeds 0-2
#
from keras import layers, models

network = models.Sequential()
network.add(layers.Conv2D(32, (3, 3), activation='relu', kernel_initializer='he_uniform', input_shape=(28, 28, 1)))
network.add(layers.MaxPooling2D((2, 2)))
network.add(layers.Flatten())
network.add(layers.Dense(100, activation='relu', kernel_initializer='he_uniform'))
network.add(layers.Dense(10, activation='softmax'))
network.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
network.summary()
