FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY maze ./maze
RUN pip install --no-cache-dir .
ENTRYPOINT ["maze"]
