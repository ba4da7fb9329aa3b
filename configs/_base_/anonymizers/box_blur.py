# Average each face pixel over the 15x15 square around it.
anonymizer = dict(type='BoxBlur', kernel_size=15)
