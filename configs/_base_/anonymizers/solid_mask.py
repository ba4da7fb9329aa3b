# Paint faces black.
custom_imports = dict(imports=['mmanon'], allow_failed_imports=False)
anonymizer = dict(type='SolidMask', fill=0)
