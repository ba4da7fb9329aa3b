# Blur faces with a 15x15 Gaussian kernel (sigma derived from the size, as OpenCV does).
anonymizer = dict(type='GaussianBlur', kernel_size=15, sigma=None)
