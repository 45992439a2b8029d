"""The compute dtypes every model offers (parameters stay float32). float16 is not offered:
without loss scaling its gradients underflow."""
DTYPES = ('float32', 'bfloat16')
