# Average each face pixel over the 15x15 square around it.
custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)
anonymizer = dict(type='BoxBlur', kernel_size=15)
