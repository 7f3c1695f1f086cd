"""diffkit plugin: the PNDM and IPNDM schedulers."""
