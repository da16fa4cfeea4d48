from .shapes import Shapes
