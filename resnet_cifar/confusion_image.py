"""The confusion matrix of an eval drawn as an image, for TensorBoard."""

import io

import numpy as np
import tensorflow as tf


def confusion_image(confusion, class_names, step):
    """The confusion matrix drawn with matplotlib, as a [1, H, W, 4] image for tf.summary.image.

    A cell's colour is its share of the true class (the row), so classes of different sizes
    compare, and the colour bar says which share a colour is; up to 20 classes each cell also
    carries its count of images (CIFAR-100's 100 classes get colour alone)."""
    import matplotlib  # here, not above: it takes a while to load, and most commands never draw

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    num_classes = len(class_names)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.35 * num_classes, 24)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), dpi=80)  # the extra width is the colour bar's
    image = ax.imshow(shares, cmap='Blues', vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03).set_label('share of the true class (row)')
    ticks = range(num_classes)
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    title = f'step {step}: share of each true class'
    if num_classes <= 20:
        for (row, col), count in np.ndenumerate(confusion):
            color = 'white' if shares[row, col] > 0.5 else ('black' if count else 'lightgray')
            ax.text(col, row, str(count), ha='center', va='center', fontsize=8 if num_classes <= 10 else 7, color=color)
        title += ', images counted in each cell'
    ax.set_title(title)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format='png')
    plt.close(fig)
    return tf.image.decode_png(png.getvalue())[tf.newaxis]
