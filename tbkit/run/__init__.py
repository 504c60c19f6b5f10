"""tbkit.run"""
