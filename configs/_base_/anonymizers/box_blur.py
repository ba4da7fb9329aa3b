# Average each face pixel over the square around it whose side is half the face region's longer side.
anonymizer = dict(type='BoxBlur', kernel_ratio=0.5)
