# Blur each face region with a Gaussian kernel half the region's longer side wide (sigma derived from the size, as
# OpenCV does), so faces of every size are blurred alike.
anonymizer = dict(type='GaussianBlur', kernel_ratio=0.5, sigma=None)
