"""The encodings the served model decodes, by their first bytes: the serving graph refuses other bytes, and the
client checks files before sending them so that the refusal names the file (plain bytes: the client imports no
TensorFlow)."""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
