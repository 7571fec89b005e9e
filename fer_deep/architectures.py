"""CNN architectures for 48x48 gray faces: a registry of ``make_model(input_shape, num_classes)``.

Every builder returns a functional :class:`keras.Model` that takes raw pixel
values (float, 0..255, shape ``(48, 48, 1)``) and returns softmax
probabilities.  Pixel scaling is a layer inside the model, so a saved model
needs no preprocessing that must match training.  Only ``keras`` is used, so
the models build under any Keras backend (TensorFlow, JAX, PyTorch).

Registry
--------
``tutorial``
    The classic Keras tutorial network for FER-2013 (about 63-66% test
    accuracy); ``seed``, its former name, is an alias
    (:data:`fer_deep.ARCHITECTURE_ALIASES`).
``vgg``
    A VGG-style network with batch normalisation, in the family of
    Pramerdorfer & Kampel (2016, "Facial expression recognition using
    convolutional neural networks: state of the art", 72.7% single VGG model on
    PrivateTest at 48x48) and Khaireddin & Chen (2021, 73.3%): four blocks of
    3x3 convolutions (64, 128, 256, 512 filters), each conv followed by batch
    normalisation and ReLU, 2x2 max pooling and dropout after each block, then
    two dense layers of 1024 with dropout.
``mobilenet_v2``
    :func:`keras.applications.MobileNetV2` trained from scratch (or from a
    local weights file), behind a stem that resizes to 96x96 and repeats the
    gray channel to RGB.
``vgg_cpu``
    A VGG-style network sized for training on a CPU: the centre ``crop`` of
    the face (40x40 by default), four blocks of two 3x3 convolutions with
    batch normalisation (32, 64, 128, 256 filters), global average pooling
    and one softmax layer; about 0.08 G multiply-adds a face.
``resnet_cpu``
    A small residual network at a similar cost: four stages of basic
    residual blocks (32, 64, 128, 256 filters, the first block of the last
    three halving the resolution), global average pooling and a softmax
    layer.

The CPU networks take the whole 48x48 face and cut its centre ``crop`` inside
the model.  Training shifts the faces by up to ``(48 - crop) / 2`` pixels
before that cut, which is a random ``crop``-sized window of the face;
prediction sees the centre window, and test-time augmentation
(:func:`fer_deep.model.crop_shifts`) averages the four corner windows, the
centre and their mirror images.
"""

from __future__ import annotations

import keras
from keras import layers

from . import ARCHITECTURE_ALIASES

# Pixel mean and standard deviation of FER-2013's Training split (28,709 faces),
# measured once; fixed constants keep the model self-contained (no adapt step).
FER2013_PIXEL_MEAN = 130.96
FER2013_PIXEL_STD = 78.22

DEFAULT_INPUT_SHAPE = (48, 48, 1)


def make_tutorial(input_shape=DEFAULT_INPUT_SHAPE, num_classes=7, *, dropout=(0.25, 0.25, 0.5)) -> keras.Model:
    """The classic tutorial CNN for FER-2013.

    Conv2D 32 -> Conv2D 64 -> MaxPool -> Dropout -> Conv2D 128 -> MaxPool ->
    Conv2D 128 -> MaxPool -> Dropout -> Flatten -> Dense 1024 -> Dropout ->
    Dense softmax.  All convolutions are 3x3 with ReLU and "valid" padding, as
    in the tutorial.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)`` of the faces, raw pixels 0..255.
    num_classes : int
        Number of output classes.
    dropout : tuple of float
        Rates of the two convolutional dropouts and the dense dropout.

    Returns
    -------
    keras.Model
    """
    conv_rate_1, conv_rate_2, dense_rate = dropout
    inputs = keras.Input(shape=input_shape, name="face")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Dropout(conv_rate_1, name="drop1")(x)
    x = layers.Conv2D(128, 3, activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Conv2D(128, 3, activation="relu", name="conv4")(x)
    x = layers.MaxPooling2D(2, name="pool3")(x)
    x = layers.Dropout(conv_rate_2, name="drop2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, activation="relu", name="dense")(x)
    x = layers.Dropout(dense_rate, name="drop3")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tutorial")


def make_vgg(
    input_shape=DEFAULT_INPUT_SHAPE,
    num_classes=7,
    *,
    filters=(64, 128, 256, 512),
    convs_per_block=(2, 2, 2, 2),
    dense_units=(1024, 1024),
    block_dropout=0.25,
    dense_dropout=0.5,
) -> keras.Model:
    """A VGG-style CNN with batch normalisation for 48x48 faces.

    Each block is ``convs_per_block`` 3x3 "same" convolutions (no bias, since
    batch normalisation supplies the shift), each followed by batch
    normalisation and ReLU, then 2x2 max pooling and dropout.  Four blocks
    take 48x48 down to 3x3; two dense layers with batch normalisation, ReLU and
    dropout precede the softmax.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)`` of the faces, raw pixels 0..255.
    num_classes : int
        Number of output classes.
    filters : tuple of int
        Filters per block.
    convs_per_block : tuple of int
        Convolutions per block (same length as ``filters``).
    dense_units : tuple of int
        Units of the dense layers before the softmax.
    block_dropout, dense_dropout : float
        Dropout rates after each block and after each dense layer.

    Returns
    -------
    keras.Model
    """
    if len(filters) != len(convs_per_block):
        raise ValueError(f"filters {filters} and convs_per_block {convs_per_block} differ in length")
    inputs = keras.Input(shape=input_shape, name="face")
    # Standardise with the dataset's pixel statistics, as Pramerdorfer & Kampel do.
    x = layers.Normalization(mean=FER2013_PIXEL_MEAN, variance=FER2013_PIXEL_STD**2, name="standardise")(inputs)
    for block, (width, count) in enumerate(zip(filters, convs_per_block), start=1):
        for index in range(1, count + 1):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{block}_conv{index}")(x)
            x = layers.BatchNormalization(name=f"block{block}_bn{index}")(x)
            x = layers.ReLU(name=f"block{block}_relu{index}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = layers.Dropout(block_dropout, name=f"block{block}_drop")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate(dense_units, start=1):
        x = layers.Dense(units, use_bias=False, name=f"dense{index}")(x)
        x = layers.BatchNormalization(name=f"dense{index}_bn")(x)
        x = layers.ReLU(name=f"dense{index}_relu")(x)
        x = layers.Dropout(dense_dropout, name=f"dense{index}_drop")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="vgg")


def make_mobilenet_v2(
    input_shape=DEFAULT_INPUT_SHAPE,
    num_classes=7,
    *,
    size=96,
    alpha=1.0,
    weights=None,
    dropout=0.2,
) -> keras.Model:
    """MobileNetV2 for gray faces: resize + channel-repeat stem, the Keras application body, a softmax head.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)`` of the faces, raw pixels 0..255; one or three channels.
    num_classes : int
        Number of output classes.
    size : int
        Side the faces are resized to before the body (at least 32; 96 is
        MobileNetV2's smallest standard size and leaves a 3x3 final map).
    alpha : float
        Width multiplier of MobileNetV2.
    weights : None or str
        ``None`` trains from scratch; a path to a local weights file for
        ``include_top=False`` with the same ``alpha`` initialises the body.
        Nothing is ever downloaded: ``"imagenet"`` is refused.
    dropout : float
        Dropout rate before the softmax.

    Returns
    -------
    keras.Model
    """
    if weights is not None and str(weights).lower() == "imagenet":
        raise ValueError("weights='imagenet' would download at run time; give the path of a local weights file")
    inputs = keras.Input(shape=input_shape, name="face")
    # MobileNetV2 expects pixels in [-1, 1] and three channels.
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = layers.Resizing(size, size, interpolation="bilinear", name="resize")(x)
    if input_shape[-1] == 1:
        x = layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    # Passing the stem's tensor as input_tensor inlines the body's layers into
    # this graph, so explain.py can reach every block's activations.
    body = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), input_tensor=x, alpha=alpha, include_top=False, weights=None
    )
    if weights is not None:
        body.load_weights(weights)
    x = layers.GlobalAveragePooling2D(name="pool")(body.output)
    x = layers.Dropout(dropout, name="drop")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def _cpu_stem(input_shape, crop):
    """Input, centre crop and standardisation shared by the CPU networks."""
    if not 8 <= crop <= min(input_shape[:2]):
        raise ValueError(f"crop must lie in 8..{min(input_shape[:2])}, got {crop}")
    inputs = keras.Input(shape=input_shape, name="face")
    x = layers.CenterCrop(crop, crop, name="centre_crop")(inputs) if crop < min(input_shape[:2]) else inputs
    x = layers.Normalization(mean=FER2013_PIXEL_MEAN, variance=FER2013_PIXEL_STD**2, name="standardise")(x)
    return inputs, x


def _cpu_head(x, dropout, num_classes):
    """Global average pooling, dropout and the softmax layer of the CPU networks."""
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="drop")(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)


def _conv_bn_relu(x, width, name, strides=1, relu=True):
    x = layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def make_vgg_cpu(
    input_shape=DEFAULT_INPUT_SHAPE,
    num_classes=7,
    *,
    crop=40,
    filters=(32, 64, 128, 256),
    convs_per_block=2,
    dropout=0.3,
) -> keras.Model:
    """A VGG-style CNN sized for CPU training: blocks of 3x3 conv + batch norm, global average pooling.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)`` of the faces, raw pixels 0..255.
    num_classes : int
        Number of output classes.
    crop : int
        Side of the centre window the network sees (the whole face if equal to it).
    filters : tuple of int
        Filters per block; each block ends in 2x2 max pooling.
    convs_per_block : int
        3x3 convolutions per block.
    dropout : float
        Dropout rate before the softmax.

    Returns
    -------
    keras.Model
    """
    inputs, x = _cpu_stem(tuple(input_shape), int(crop))
    for block, width in enumerate(filters, start=1):
        for index in range(1, int(convs_per_block) + 1):
            x = _conv_bn_relu(x, width, f"block{block}_{index}")
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, _cpu_head(x, dropout, num_classes), name="vgg_cpu")


def make_resnet_cpu(
    input_shape=DEFAULT_INPUT_SHAPE,
    num_classes=7,
    *,
    crop=40,
    filters=(32, 64, 128, 256),
    blocks_per_stage=1,
    dropout=0.3,
) -> keras.Model:
    """A small ResNet (basic blocks, batch norm) for CPU training.

    The first block works on the standardised face itself (its shortcut is a
    1x1 projection to ``filters[0]`` channels): a separate stem convolution at
    full resolution would cost as much as a block.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)`` of the faces, raw pixels 0..255.
    num_classes : int
        Number of output classes.
    crop : int
        Side of the centre window the network sees.
    filters : tuple of int
        Filters per stage; every stage after the first starts with a stride-2 block.
    blocks_per_stage : int
        Basic residual blocks (two 3x3 convolutions) per stage.
    dropout : float
        Dropout rate before the softmax.

    Returns
    -------
    keras.Model
    """
    inputs, x = _cpu_stem(tuple(input_shape), int(crop))
    for stage, width in enumerate(filters, start=1):
        for block in range(1, int(blocks_per_stage) + 1):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            if strides != 1 or shortcut.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=strides, use_bias=False, name=f"{name}_project")(x)
                shortcut = layers.BatchNormalization(name=f"{name}_project_bn")(shortcut)
            x = _conv_bn_relu(x, width, f"{name}_a", strides=strides)
            x = _conv_bn_relu(x, width, f"{name}_b", relu=False)
            x = layers.Add(name=f"{name}_add")([shortcut, x])
            x = layers.ReLU(name=f"{name}_out")(x)
    return keras.Model(inputs, _cpu_head(x, dropout, num_classes), name="resnet_cpu")


def multiply_adds(model) -> int:
    """Multiply-adds of one forward pass of a face through the convolution and dense layers."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.Dense)):
            kernel = layer.kernel.shape
            output = layer.output.shape
            positions = 1
            for side in output[1:-1]:
                positions *= int(side)
            weights_per_output = 1
            for side in kernel[:-1]:
                weights_per_output *= int(side)
            total += positions * int(output[-1]) * weights_per_output
        elif isinstance(layer, layers.DepthwiseConv2D):
            kernel = layer.kernel.shape
            output = layer.output.shape
            total += int(output[1]) * int(output[2]) * int(output[3]) * int(kernel[0]) * int(kernel[1])
    return total


ARCHITECTURES = {
    "tutorial": make_tutorial,
    "vgg": make_vgg,
    "mobilenet_v2": make_mobilenet_v2,
    "vgg_cpu": make_vgg_cpu,
    "resnet_cpu": make_resnet_cpu,
}
"""Architecture name -> ``make_model(input_shape, num_classes, **params) -> keras.Model``."""


def make_model(name: str, input_shape=DEFAULT_INPUT_SHAPE, num_classes=7, **params) -> keras.Model:
    """Build the registered architecture ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`ARCHITECTURES` or an alias of one (:data:`fer_deep.ARCHITECTURE_ALIASES`).
    input_shape : tuple of int
        ``(height, width, channels)``.
    num_classes : int
        Number of output classes.
    **params
        Keyword arguments of the builder (e.g. ``filters`` for ``vgg``).

    Returns
    -------
    keras.Model
    """
    name = ARCHITECTURE_ALIASES.get(name, name)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](tuple(input_shape), int(num_classes), **params)
