"""tbkit.tools"""
