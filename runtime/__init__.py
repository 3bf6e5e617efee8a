"""diskspec runtime: engines, images, tools and the command line."""
