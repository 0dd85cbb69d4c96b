"""Entry point of the built artifact (zipapp)."""

import app

app.main()
