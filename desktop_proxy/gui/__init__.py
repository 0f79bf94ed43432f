"""The tray app: the only package that imports PySide6 or qasync. Entry point: `app.run(args)`."""
