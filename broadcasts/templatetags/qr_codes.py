"""`{{ url|qr_code }}`: a URL as an inline SVG QR code (segno), for a phone's camera."""

import segno
from django import template
from django.utils.safestring import mark_safe

register = template.Library()


@register.filter
def qr_code(url: str) -> str:
    # segno builds the markup from the code's modules and escapes the title: nothing unescaped gets in.
    return mark_safe(segno.make(url, error="m").svg_inline(scale=5, light="white", title=url))
