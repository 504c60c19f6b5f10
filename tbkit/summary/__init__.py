"""tbkit.summary"""
