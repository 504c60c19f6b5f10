"""tbkit.model"""
