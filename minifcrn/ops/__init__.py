"""One file per op family, each a ``Function`` with forward and backward side by side.

arithmetic     elementwise + - * /, sum, mean, reshape, slicing (NumPy broadcasting)
conv           conv2d (im2col + one matrix product; col2im as a gather)
pool           max_pool2d
upsample       upsample_bilinear (half-pixel centres, PyTorch's align_corners=False)
upsample_conv  upsample_bilinear x2 then a 5x5 conv2d, as four 4x4 phase convolutions
relu           relu
loss           mse_loss
"""
