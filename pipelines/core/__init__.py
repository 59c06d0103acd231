"""The ground floor: contracts every floor shares; imports nothing else of lmpipe."""
