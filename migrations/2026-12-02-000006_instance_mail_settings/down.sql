DROP TABLE organization_branding;
DROP TABLE instance_mail_settings;
