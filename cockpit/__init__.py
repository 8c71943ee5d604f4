"""The operations cockpit: a Dash web app over the prediction service, the lake and the nightly
scores (`shipdelay cockpit`). It never imports training."""
