"""What workflows, activities, the client and the web apps exchange: the payloads of
the workflows' messages, the activities' inputs and results, the search attributes.
Plain pydantic models: only activities touch the tables.
"""
