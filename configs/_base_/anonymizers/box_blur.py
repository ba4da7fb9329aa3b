# Average each face pixel over the square around it whose side is 0.65 of the face region's longer side (chosen
# on real faces: README, "How well real faces stay hidden").
anonymizer = dict(type='BoxBlur', kernel_ratio=0.65)
