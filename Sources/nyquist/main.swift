print("nyquist")
