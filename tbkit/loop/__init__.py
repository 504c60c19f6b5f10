"""tbkit.loop"""
