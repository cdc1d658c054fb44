"""What a screened case leaves for a person: the HTML report and its slice pictures."""
