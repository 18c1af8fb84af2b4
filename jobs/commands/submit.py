"""placeholder"""


def add_parser(sub, name):
    pass
