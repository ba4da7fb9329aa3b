# Blur faces with a 15x15 Gaussian kernel (sigma derived from the size, as OpenCV does).
custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)
anonymizer = dict(type='GaussianBlur', kernel_size=15, sigma=None)
