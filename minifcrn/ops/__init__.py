"""One file per op family, each a ``Function`` with forward and backward side by side.

arithmetic  elementwise + - * /, sum, mean, reshape, slicing (NumPy broadcasting)
conv        conv2d (im2col + one matrix product; col2im as a gather)
pool        max_pool2d
upsample    upsample_bilinear (half-pixel centres, PyTorch's align_corners=False)
relu        relu
loss        mse_loss
"""
