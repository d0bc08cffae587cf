"""The platform's rules: blocking conditions (error 1009), the refund and its money in
minor units, settings resolution and the read rules of the data, signed links.
"""
