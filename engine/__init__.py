"""The runctl training engine. Importing this package does not import torch; its modules do."""
