# Paint faces black.
anonymizer = dict(type='SolidMask', fill=0)
