"""Where attempts run: the attempt logic shared by every executor, and the executors."""
