# One image for every process: migrate, worker, beat, receiver and the simulator.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY dialer ./dialer
COPY migrations ./migrations
# Editable on purpose: `dialer db upgrade` reads alembic.ini and migrations/ beside the
# package, which a site-packages install would leave behind.
RUN pip install -e . && useradd --create-home dialer
USER dialer
CMD ["dialer", "--help"]
