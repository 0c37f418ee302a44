"""One file per op family, each a ``Function`` with forward and backward side by side,
on the reference path that mirrors its CUDA kernel (the CPU fast paths are in ``minifcrn.cpu``).

arithmetic     elementwise + - * /, sum, mean, reshape, slicing (NumPy broadcasting); it also
               gives ``Tensor`` its operators
conv           conv2d (im2col + one matrix product; col2im as a gather)
pool           max_pool2d
upsample       upsample_bilinear (half-pixel centres, PyTorch's align_corners=False)
relu           relu
loss           mse_loss
"""
