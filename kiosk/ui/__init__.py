"""The kiosk screen: a local web page served by the daemon (``kiosk.ui.server``)."""
