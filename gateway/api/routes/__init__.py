"""The API's routers, one module per audience: public, sign-in, member, DSO, market operator."""
